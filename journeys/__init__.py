"""Journeys: a warehouse-native engine for customer journeys."""

__version__ = "0.1.0"
