"""Evaluators chosen by name from `config.evals` (big_vision's evaluators package).

Each entry of `config.evals` has a `type` naming a module here and an `every_steps` period;
`common.from_config` builds them, each module's `Evaluator.run(params, frozen)` returns
named scalars, and its jitted functions are module-level and cached (public, so the AOT
tool compiles them through the same API).
"""
