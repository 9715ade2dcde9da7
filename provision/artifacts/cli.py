"""`kubeprov artifacts …`: the air-gap manifest, and checking an offline bundle against it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from provision import console
from provision.config.models import ArtifactSource
from provision.console import OutputOpt, err, out
from provision.errors import ConfigError

artifacts_app = typer.Typer(
    help="What binaries and images a cluster needs and where they come from; check an offline bundle.",
    no_args_is_help=True,
)

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="Cluster file.", show_default=False, readable=False),
]
InventoryOpt = Annotated[
    Optional[Path],
    typer.Option("--inventory", "-i", help="Ansible inventory supplying the hosts.", show_default=False, readable=False),
]
VersionOpt = Annotated[
    Optional[str],
    typer.Option("--version", help="A Kubernetes version (v1.31.4) instead of a cluster file: every artifact any cluster of it may need."),
]


def _cluster(config: Path | None, inventory: Path | None, version: str | None):
    from provision.loading import load_for_command

    if config is not None and version is not None:
        raise ConfigError("give a cluster file (-c) or --version, not both")
    if config is None and inventory is None:
        if version is None:
            raise ConfigError("give a cluster file (-c FILE) or --version V")
        return None
    return load_for_command(config, inventory)


def _checksum(artifact, cache) -> str:
    if artifact.sha256:
        return artifact.sha256
    known = cache.known(artifact.url) if artifact.url else None
    if known:
        return f"{known} (verified, cached)"
    if artifact.sha256_url:
        return f"published at {artifact.sha256_url}"
    if artifact.kind.value == "package":
        return "apt: signed repository metadata"
    if artifact.kind.value == "image":
        return "registry digest, checked by containerd on pull"
    return "-"


def _merge(plans):
    """Union of several plans' artifacts by (kind, name, version); hosts are the synthetic ones, dropped."""
    seen = {}
    for plan in plans:
        for artifact in plan.artifacts:
            seen.setdefault((artifact.kind, artifact.name, artifact.version), artifact)
    return list(seen.values())


@artifacts_app.command("list")
def list_artifacts(
    config: ConfigOpt = None,
    inventory: InventoryOpt = None,
    version: VersionOpt = None,
    source: Annotated[
        Optional[ArtifactSource],
        typer.Option("--source", help="Override the cluster file's artifacts.source (default with --version: release)."),
    ] = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Download cache (default ~/.cache/kubeprov/artifacts).")] = None,
    output: OutputOpt = console.Output.TABLE,
) -> None:
    """The air-gap manifest: every binary, package and image, with its source and sha256 where known.

    Piped, one line per artifact however long its URLs. `-o json`: {"cluster", "kubernetesVersion",
    "source", "repositories": [...], "artifacts": [{"name", "kind", "version", "source", "url",
    "sha256", "checksum", "hosts" | "when"}, …]}, the same rows.
    """
    from provision.artifacts import Cache, plan_artifacts
    from provision.artifacts.versions_only import every_shape

    cluster = _cluster(config, inventory, version)
    cache = Cache(cache_dir)
    if cluster is None:
        chosen = source or ArtifactSource.RELEASE
        if chosen is ArtifactSource.BUNDLE:
            raise ConfigError("--source bundle needs a cluster file with artifacts.bundleDir (or use `artifacts bundle --from DIR`)")
        shapes = every_shape(version)
        artifacts = _merge(plan_artifacts(c, source=chosen) for c in shapes)
        kubernetes_version, chosen_source = shapes[0].kubernetes_version, chosen
        title = f"Kubernetes {kubernetes_version} · source {chosen.value} · every optional part (see WHEN)"
        hosts_column = False
        repositories = []
    else:
        plan = plan_artifacts(cluster, source=source)
        artifacts = list(plan.artifacts)
        kubernetes_version, chosen_source = cluster.kubernetes_version, plan.source
        title = f"cluster {cluster.name} · Kubernetes {kubernetes_version} · source {plan.source.value}"
        hosts_column = True
        repositories = list(plan.repositories)

    def where(a) -> str:
        return "registry (containerd pulls it)" if a.kind.value == "image" and a.url == a.name else a.source

    if output is console.Output.JSON:
        console.json({
            "cluster": cluster.name if cluster else None,
            "kubernetesVersion": kubernetes_version,
            "source": chosen_source.value,
            "repositories": [{"name": r.name, "debLine": r.deb_line, "keyUrl": r.key_url} for r in repositories],
            "artifacts": [
                {"name": a.name, "kind": a.kind.value, "version": a.version or None, "source": where(a), "url": a.url,
                 "sha256": a.sha256, "checksum": _checksum(a, cache),
                 **({"hosts": list(a.hosts)} if hosts_column else {"when": a.when or "always"})}
                for a in artifacts
            ],
        })
        return
    for repo in repositories:
        console.text(f"apt repository {repo.name}: {repo.deb_line} (key {repo.key_url})")
    table = Table(title=escape(title), title_justify="left", box=None, pad_edge=False)
    for column in ("NAME", "KIND", "VERSION", "SOURCE", "SHA256", "HOSTS" if hosts_column else "WHEN"):
        table.add_column(column, overflow="fold")
    for a in artifacts:
        last = ", ".join(a.hosts) if hosts_column else (a.when or "always")
        table.add_row(*map(escape, (a.name, a.kind.value, a.version or "(distribution)", where(a), _checksum(a, cache), last)))
    console.table(table)
    console.text(f"{len(artifacts)} artifacts")


@artifacts_app.command("bundle")
def check_bundle(
    from_dir: Annotated[Path, typer.Option("--from", help="The bundle directory (bin/, cni/, images/, debs/, SHA256SUMS).")],
    config: ConfigOpt = None,
    inventory: InventoryOpt = None,
    version: VersionOpt = None,
) -> None:
    """Check an offline bundle: SHA256SUMS covers every file and matches, and nothing the cluster needs is missing.

    With --version instead of a cluster file, the bundle is checked for the plainest cluster of that
    version (one control plane, a worker, stacked etcd, the default CNI). Exit 1 if anything is wrong.
    """
    from provision.artifacts import verify_bundle
    from provision.artifacts.bundle import read_sums
    from provision.artifacts.versions_only import default_cluster

    cluster = _cluster(config, inventory, version) or default_cluster(version)
    problems = verify_bundle(from_dir, cluster)
    for problem in problems:
        err.print(f"[red]problem:[/] {escape(str(problem))}", soft_wrap=True)
    if problems:
        err.print(f"[red]bundle {escape(str(from_dir))} refused: {len(problems)} problem(s)[/]")
        raise typer.Exit(1)
    sums, _ = read_sums(from_dir)
    out.print(
        f"[green]ok[/] bundle {escape(str(from_dir))}: {len(sums)} files verified, everything Kubernetes "
        f"{cluster.kubernetes_version} ({cluster.name}) needs is there"
    )
