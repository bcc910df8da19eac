"""Toy 'training' run: sleeps, then reports a quadratic of its two knobs."""
import os
import time

from score import score

X = 0.5
Y = 2.0

time.sleep(float(os.environ.get("QUAD_SLEEP_S", "0")))
print("@metric " + '{"name": "loss", "value": %r}' % score(X, Y))
