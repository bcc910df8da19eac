"""Toy 'training' run with noise: sleeps, then reports the loss of its two knobs plus seeded noise."""
import os
import time

from score import score

GAIN = 0.0
DUMMY = 0.0

time.sleep(float(os.environ.get("NOISY_SLEEP_S", "0")))
print("@metric " + '{"name": "loss", "value": %r}' % score(GAIN, DUMMY))
