"""eelib: early data exposure, reproduced."""
