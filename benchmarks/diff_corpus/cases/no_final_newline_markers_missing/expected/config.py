# run configuration for the debug preset
seed = 1337
num_workers = 4
log_every = 10
compile_model = False
eval_batches = 16