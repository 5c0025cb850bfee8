"""The only code that talks to the API server: render children, observe them, apply decisions."""
