"""Training and test data: samplers, the on-the-fly mixer, fixed sets, triplets, corruption.

Also the per-recipe data pipelines (``recipe_data``, ``tse_data``, ``separation_data``)
that run ``data_prepare`` and build the datasets a recipe trains on.
"""
