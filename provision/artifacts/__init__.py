"""Where binaries and images come from: package repositories, release URLs, or an offline bundle.

The node roles use:
    plan_artifacts(cluster) -> ArtifactPlan     every artifact, the hosts needing it, where it lands
    verify_bundle(dir, cluster=None) -> [Problem]   integrity (SHA256SUMS) and completeness
    fetch_release(plan, Downloader(Cache()))    download + verify the release artifacts
    stage(plan, root, host=None)                lay verified files out under a root
    bundle.seal(dir)                            write SHA256SUMS when assembling a bundle
"""

from provision.artifacts.bundle import Problem
from provision.artifacts.download import Cache, Downloader
from provision.artifacts.errors import ArtifactError
from provision.artifacts.install import fetch_release, stage
from provision.artifacts.plan import AptRepository, Artifact, ArtifactPlan, Kind, plan_artifacts, verify_bundle

__all__ = [
    "AptRepository", "Artifact", "ArtifactError", "ArtifactPlan", "Cache", "Downloader", "Kind", "Problem",
    "fetch_release", "plan_artifacts", "stage", "verify_bundle",
]
