"""USDC payment watcher: follows Base, Ethereum and Solana and credits confirmed payments."""

__version__ = "0.1.0"
