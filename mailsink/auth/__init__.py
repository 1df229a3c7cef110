"""Authentication: credential checkers, SASL mechanisms, and the defences around them."""
