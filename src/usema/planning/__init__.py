"""usema.planning: the plan (plans.json), the contract between the stages: fingerprint, planner, schema and the
Plans object every later stage reads."""
