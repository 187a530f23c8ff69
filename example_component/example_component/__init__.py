"""A dg project built by `further_dagster.dagster.component.FurtherComponent`."""
