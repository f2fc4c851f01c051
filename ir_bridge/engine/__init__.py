"""The MDF execution engine: runs ModECI MDF graphs on numpy."""
