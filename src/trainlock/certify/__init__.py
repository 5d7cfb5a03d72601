"""Checking claims: re-verify a model directory, watch certificates during training, the conservation certificate."""
