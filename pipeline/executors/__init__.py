"""Where frames are decoded and captioned: the contract (:mod:`.base`), what every executor does
with it (:mod:`.frames`: decode and sample, answer), and the executors, ``executor=local``
(:mod:`.local`) and ``executor=ray`` (:mod:`.ray`, connecting through :mod:`.ray_cluster`).

A new backend is a sibling module with a class that meets :class:`.base.Executor`, a schema in
:mod:`pipeline.config` and a file in ``conf/executor/``; the run loop does not change.
"""
