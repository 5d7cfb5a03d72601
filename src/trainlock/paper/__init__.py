"""Recipes: the paper's figures and theory, the prediction studies and the demo. They use everything; nothing uses them."""
