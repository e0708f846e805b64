"""The `cinesync` command line. Every command imports its implementation lazily, so
`cinesync serve` works in the serving image, which has no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="cinesync",
    help="CineSync: train, evaluate, publish and serve movie recommendations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
store_app = typer.Typer(help="Inspect and manage the versioned model store.", no_args_is_help=True)
app.add_typer(store_app, name="store")

DatasetOpt = Annotated[
    str,
    typer.Option(
        help="ml-latest-small | ml-100k | synthetic[:key=value,...] | PATH to a data folder or file"
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(help="Where ml-100k is found or downloaded to (default: $CINESYNC_DATA_DIR)."),
]
StoreOpt = Annotated[Path, typer.Option(envvar="CINESYNC_STORE_DIR", help="Model store root.")]
PortOpt = Annotated[int, typer.Option(min=1, max=65535, help="Port (1-65535).")]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="pop | itemknn | ease")],
    dataset: DatasetOpt = "ml-latest-small",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON.")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Fit a baseline and evaluate it with the full-ranking leave-one-out protocol."""
    from training.errors import CineSyncError
    from training.evaluate_cli import run_evaluate

    try:
        run_evaluate(model=model, dataset=dataset, json_out=json_out, data_dir=data_dir)
    except CineSyncError as exc:
        _fail(str(exc))


@app.command()
def train(
    model: Annotated[str, typer.Option(help="sasrec | bert4rec | two_tower")] = "sasrec",
    dataset: DatasetOpt = "ml-latest-small",
    config: Annotated[
        Path | None, typer.Option(help="TOML config (training/configs/*.toml).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default runs/<model>-<dataset>-<time>).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the config's epoch count.")] = None,
    resume: Annotated[bool, typer.Option(help="Resume from OUT/checkpoint.pt.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the run OUT already holds (else that is an error).")
    ] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    seed: Annotated[int | None, typer.Option(help="Override the config's seed.")] = None,
    publish: Annotated[
        bool, typer.Option(help="Publish the exported bundle into --store.")
    ] = False,
    store: Annotated[
        Path | None, typer.Option(envvar="CINESYNC_STORE_DIR", help="Model store root.")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Model name in the store (default $CINESYNC_MODEL_NAME or 'cinesync')."),
    ] = None,
    data_dir: DataDirOpt = None,
    nproc: Annotated[int, typer.Option(min=1, help="Processes (DDP via torchrun).")] = 1,
    mlflow: Annotated[bool | None, typer.Option(help="Log to MLflow ($CINESYNC_MLFLOW).")] = None,
) -> None:
    """Train a model, evaluate it, export its bundle and optionally publish it."""
    from training.errors import CineSyncError
    from training.train_cli import check_run_folder, run_train

    if publish:  # a name the store refuses fails now, not after the whole training run
        from model_store.cli_ops import default_model_name
        from model_store.errors import StoreError
        from model_store.validation import validate_model_name

        try:
            validate_model_name(name) if name else default_model_name()
        except StoreError as exc:
            _fail(str(exc))
    try:
        check_run_folder(out, resume=resume, overwrite=overwrite)
    except CineSyncError as exc:
        _fail(str(exc))
    options = dict(
        model=model,
        dataset=dataset,
        config=config,
        out=out,
        epochs=epochs,
        resume=resume,
        device=device,
        seed=seed,
        publish=publish,
        store=store,
        name=name,
        data_dir=data_dir,
        mlflow=mlflow,
    )
    if nproc > 1:
        from training.distributed import launch
        from training.train_cli import default_run_dir

        options["out"] = out or default_run_dir(model, dataset)  # one folder for every rank
        raise typer.Exit(code=launch(nproc, options))
    try:
        run_train(**options)  # type: ignore[arg-type]
    except CineSyncError as exc:
        _fail(str(exc))


@app.command()
def tune(
    model: Annotated[str, typer.Option(help="sasrec | bert4rec | two_tower")] = "sasrec",
    dataset: DatasetOpt = "ml-latest-small",
    trials: Annotated[int, typer.Option(min=1, help="Trials to run now.")] = 20,
    study_db: Annotated[Path | None, typer.Option(help="SQLite study file (resumed).")] = None,
    out: Annotated[Path | None, typer.Option(help="Best config TOML (default runs/tune/).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per trial.")] = None,
    timeout: Annotated[float | None, typer.Option(help="No new trial after S seconds.")] = None,
    config: Annotated[Path | None, typer.Option(help="Base TOML (default: the model's).")] = None,
    seed: Annotated[int, typer.Option(help="Sampler seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    study_name: Annotated[str | None, typer.Option(help="Default <model>-<dataset>.")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Tune hyper-parameters with Optuna on validation NDCG@10; write the best config as TOML."""
    from training.errors import CineSyncError
    from training.tune import run_tune

    try:
        run_tune(
            model=model,
            dataset=dataset,
            trials=trials,
            study_db=study_db,
            out=out,
            epochs=epochs,
            timeout=timeout,
            config=config,
            seed=seed,
            device=device,
            data_dir=data_dir,
            study_name=study_name,
        )
    except CineSyncError as exc:
        _fail(str(exc))


@app.command()
def publish(
    run: Annotated[Path, typer.Option(help="A training run folder holding bundle/.")],
    store: StoreOpt,
    name: Annotated[str | None, typer.Option(help="Model name in the store.")] = None,
) -> None:
    """Publish a run's exported bundle atomically as the next version."""
    from training.errors import CineSyncError
    from training.publish import publish_run

    try:
        version = publish_run(run_dir=run, store_root=store, name=name)
    except CineSyncError as exc:
        _fail(str(exc))
    else:
        typer.echo(f"published version {version}")


@store_app.command("list")
def store_list(
    store: StoreOpt,
    name: Annotated[str | None, typer.Option(help="Model name (default: every model).")] = None,
) -> None:
    """List models, versions, LATEST and offline metrics."""
    from model_store.cli_ops import list_store
    from model_store.errors import StoreError

    try:
        typer.echo(list_store(store, name))
    except StoreError as exc:
        _fail(str(exc))


@store_app.command("rollback")
def store_rollback(
    store: StoreOpt,
    name: Annotated[str | None, typer.Option(help="Model name.")] = None,
    to: Annotated[
        int | None, typer.Option(help="Version to point LATEST at (default: the one before).")
    ] = None,
) -> None:
    """Point LATEST at an older version (the service picks it up on /admin/reload)."""
    from model_store.cli_ops import rollback
    from model_store.errors import StoreError

    try:
        typer.echo(rollback(store, name, to))
    except StoreError as exc:
        _fail(str(exc))


@store_app.command("prune")
def store_prune(
    store: StoreOpt,
    keep: Annotated[int, typer.Option(min=1, help="Versions to keep (LATEST is always kept).")] = 5,
    name: Annotated[str | None, typer.Option(help="Model name.")] = None,
) -> None:
    """Delete all but the newest KEEP versions."""
    from model_store.cli_ops import prune
    from model_store.errors import StoreError

    try:
        typer.echo(prune(store, name, keep))
    except StoreError as exc:
        _fail(str(exc))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: PortOpt = 8000,
) -> None:
    """Run the recommendation service (settings from CINESYNC_* variables)."""
    from service.main import serve as run_server

    run_server(host=host, port=port)


@app.command()
def demo(
    port: PortOpt = 8000,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
) -> None:
    """Train on the bundled dataset if the store is empty, publish, then serve."""
    from training.demo import run_demo

    run_demo(host=host, port=port)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
