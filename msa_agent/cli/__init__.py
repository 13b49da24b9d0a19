def main() -> None:  # placeholder until the CLI lands
    raise SystemExit("msa CLI not built yet")
