def score(x, y):
    return (x - 0.3) ** 2 + (y - 1.0) ** 2 + 1.0
