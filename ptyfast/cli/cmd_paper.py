"""``ptyfast paper``: the seed paper's experiments on its own protocol (Tables 1–3, Figure 9) as a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ptyfast.cli.app import (EXPERIMENTS, INPUT, MODEL, OUTPUT, REFINEMENT, SIMULATION, command, console,
                             parse_list)


@command("paper")
def paper_cmd(
    images: Annotated[Optional[Path], typer.Option(metavar="DIR", rich_help_panel=INPUT,
                                                   help="Folder of the paper's cat-face images.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", rich_help_panel=OUTPUT,
                                         help="Report folder (report.md, results.json, figures/, "
                                              "models/).")] = Path("paper-report"),
    budget_minutes: Annotated[float, typer.Option(metavar="MINUTES", rich_help_panel=EXPERIMENTS,
                                                  help="Training budget per trained model (minutes of this "
                                                       "machine).")] = 5.0,
    models: Annotated[str, typer.Option(metavar="ARCH,...", rich_help_panel=MODEL,
                                        help="Architectures to evaluate, comma-separated.")]
    = "ptynet-s,ptychonn,ptychonet,ptynet-b",
    model: Annotated[Optional[str], typer.Option(metavar="MODEL", rich_help_panel=MODEL,
                                                 help="PtyNet-S weights for the paper's probe (default: "
                                                      "shipped).")] = None,
    test_objects: Annotated[int, typer.Option(rich_help_panel=SIMULATION, help="Held-out test objects.")] = 5,
    object_size: Annotated[int, typer.Option(metavar="PX", rich_help_panel=SIMULATION,
                                             help="Test object side in pixels (paper 608–640).")] = 608,
    overlaps: Annotated[str, typer.Option(metavar="FRACTION,...", rich_help_panel=EXPERIMENTS,
                                          help="Table 2 overlaps.")] = "0.75,0.5,0.25,0",
    refine_overlaps: Annotated[str, typer.Option(metavar="FRACTION,...", rich_help_panel=REFINEMENT,
                                                 help="Figure 9 overlaps.")] = "0.75,0.5,0.25",
    train_steps: Annotated[Optional[int], typer.Option(rich_help_panel=EXPERIMENTS,
                                                       help="Fixed training steps instead of the budget.")] = None,
    finetune_epochs: Annotated[int, typer.Option(rich_help_panel=EXPERIMENTS,
                                                 help="Table 3 fine-tuning epochs.")] = 30,
    refine_iterations: Annotated[int, typer.Option(rich_help_panel=REFINEMENT,
                                                   help="Figure 9 rPIE iterations.")] = 50,
    experiments: Annotated[str, typer.Option(metavar="NAME,...", rich_help_panel=EXPERIMENTS,
                                             help="Any of table1, table2, table3, figure9, comma-separated.")]
    = "table1,table2,table3,figure9",
) -> None:
    """Reproduce the seed paper's experiments on its protocol: train the comparison networks within a budget,
    score every model beside flat and blurred baselines and the paper's own numbers, write a markdown report."""
    from ptyfast.evaluation.paper import PaperConfig, run_paper_protocol

    config = PaperConfig(
        models=parse_list(models, what="model"), model_s=model, budget_minutes=budget_minutes,
        train_steps=train_steps, test_objects=test_objects, object_size=object_size,
        overlaps=parse_list(overlaps, kind=float, what="overlap"),
        refine_overlaps=parse_list(refine_overlaps, kind=float, what="overlap"),
        finetune_epochs=finetune_epochs, refine_iterations=refine_iterations,
        experiments=parse_list(experiments, what="experiment"))
    run_paper_protocol(images, output, console=console, config=config)
