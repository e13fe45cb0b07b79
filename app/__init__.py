"""A real-time recommender on implicit feedback: Faust, Kafka, implicit's ALS and Redis."""

import os

# implicit's solvers run their own threads; a threaded BLAS underneath only oversubscribes.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
