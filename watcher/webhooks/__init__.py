"""Webhooks: where they may go (netguard), and how they are sent."""
