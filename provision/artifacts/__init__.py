"""Where binaries and images come from: package repositories, release URLs, or an offline bundle.

The node roles use:
    plan_artifacts(cluster) -> ArtifactPlan     every artifact, the hosts needing it, where it lands
    verify_bundle(dir, cluster=None) -> [Problem]   integrity (SHA256SUMS) and completeness
    fetch_release(plan, Downloader(Cache()))    download + verify the release artifacts
    stage(plan, root, host=None)                lay verified files out under a root
    bundle.seal(dir)                            write SHA256SUMS when assembling a bundle
"""

# Exported lazily (PEP 562): the CLI imports provision.artifacts.cli for every command, and the
# plan pulls in every renderer; a command that plans no artifacts should not pay for that.
_EXPORTS = {
    "Problem": "bundle", "Cache": "download", "Downloader": "download", "ArtifactError": "errors",
    "fetch_release": "install", "stage": "install", "AptRepository": "plan", "Artifact": "plan",
    "ArtifactPlan": "plan", "Kind": "plan", "plan_artifacts": "plan", "verify_bundle": "plan",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
