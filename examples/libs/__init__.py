"""Small libraries the demo's services use."""
