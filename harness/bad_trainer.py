"""``python -m harness.bad_trainer``: the product's trainer, except that every full fit after
the first gets random item factors, a deliberately bad candidate for the tests of the check
that keeps such a model from going live (app.model_check). It lives in the test harness, which
the installed package does not contain, so no production deployment can run it."""

from __future__ import annotations

import numpy as np

from app import trainer


class RandomFactorsTrainer(trainer.Trainer):
    """A trainer whose first fit is real, so there is a good model to serve, and whose later
    fits are noise."""

    fits = 0

    async def fit_matrix(self, item_ids, matrix, params, version, progress):
        model, user_factors = await super().fit_matrix(item_ids, matrix, params, version, progress)
        self.fits += 1
        if self.fits > 1:
            noise = np.random.default_rng(self.fits).normal(size=model.item_factors.shape)
            model.als.item_factors = noise.astype(np.float32)
        return model, user_factors


if __name__ == "__main__":
    trainer.main(RandomFactorsTrainer)
