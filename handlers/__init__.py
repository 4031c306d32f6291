"""The standalone server's own routes (the demo page); Switchboard's routes are in the package."""
