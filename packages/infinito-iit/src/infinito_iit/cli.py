"""Command-line interface of infinito-iit (placeholder until the package issue lands)."""

import argparse


def train_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infinito-iit train", description="Train a infinito-iit model.")
    parser.parse_args(argv)
    return 0


def main(argv: list[str] | None = None) -> int:
    return train_main(argv)
