"""Triggers: async poll loops that deferrable sensors hand to the triggerer."""
