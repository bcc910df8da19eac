"""Toy training: picks X and saves it as the artefact."""
import os
import time

import lib

X = 0.5

if __name__ == "__main__":
    time.sleep(float(os.environ.get("SCORED_SLEEP_S", "0")))
    lib.save_artefact(X)
