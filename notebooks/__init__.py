"""ipywidgets front end and demo notebooks."""
