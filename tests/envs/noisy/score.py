"""The fixed part: the true loss of the knobs plus noise drawn from the job's seed (IDEALAB_SEED)."""
import os
import random

SD = float(os.environ.get("NOISY_SD", "0.1"))


def noise(seed, sd=SD):
    """The run-to-run noise of a run with this seed: Gaussian, mean 0, standard deviation sd."""
    return random.Random(seed).gauss(0.0, sd)


def true_loss(gain, dummy):
    return 2.0 - gain + 0.0 * dummy  # DUMMY has no effect: ideas that change it only draw new noise


def score(gain, dummy):
    return true_loss(gain, dummy) + noise(int(os.environ.get("IDEALAB_SEED", "0")))
