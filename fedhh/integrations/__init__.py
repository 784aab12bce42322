"""Plug TEMPO advantages (:mod:`fedhh.tempo`) into RL trainers for language models.

* :mod:`fedhh.integrations.verl`: the advantage estimator ``algorithm.adv_estimator=tempo`` for
  verl 0.9.x, registered in verl's own registry by an import that verl's config triggers.
* :mod:`fedhh.integrations.trl`: ``TempoGRPOTrainer``, TRL's ``GRPOTrainer`` with TEMPO advantages.

Each module imports its library (verl, TRL) when it is itself imported; ``fedhh`` never does.
"""
