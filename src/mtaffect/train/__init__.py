"""Training: one loop, four stages (CNN teacher → CNN student → GRU teacher → GRU student)."""
