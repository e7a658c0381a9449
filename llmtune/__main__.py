"""`python -m llmtune`, so `accelerate launch -m llmtune ...` and `torchrun -m llmtune ...` work."""

from llmtune.cli import main

if __name__ == "__main__":
    main()
