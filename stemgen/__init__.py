"""stemgen."""
