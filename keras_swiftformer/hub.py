"""``hf://ORG/REPO[@REVISION]``: a Hugging Face Hub repository as a checkpoint.

Files come through ``huggingface_hub`` (an optional dependency) and its shared cache
(``$HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``), so weights that timm or transformers
already downloaded load without a new download, and ``HF_HUB_OFFLINE=1`` reads the cache only.
Which file holds the weights, and its format, is decided by `keras_swiftformer.checkpoints`.
"""

import os
import re

PREFIX = "hf://"
#: ORG/REPO as the hub spells repository ids; anything after "@" is the revision (branch, tag,
#: commit hash, or refs/pr/N).
_URI = re.compile(r"hf://([A-Za-z0-9][\w.-]*)/([A-Za-z0-9][\w.-]*)(?:@([^\s@]+))?")


class HubError(ValueError):
    """An ``hf://`` checkpoint that cannot be fetched: the message names the problem."""


def is_hub_uri(path):
    """Whether `path` is an ``hf://`` string (well formed or not)."""
    return isinstance(path, str) and path.startswith(PREFIX)


def parse(uri):
    """``hf://ORG/REPO[@REVISION]`` -> (repo id, revision or None); HubError if malformed."""
    match = _URI.fullmatch(uri)
    if match is None:
        raise HubError(f"{uri!r} is not a Hugging Face checkpoint address: expected "
                       "hf://ORG/REPO or hf://ORG/REPO@REVISION (a branch, tag or commit hash), "
                       "e.g. hf://timm/swiftformer_xs.dist_in1k")
    org, repo, revision = match.groups()
    return f"{org}/{repo}", revision


def _huggingface_hub():
    try:
        import huggingface_hub
    except ImportError as err:
        raise ImportError("hf:// checkpoints need huggingface_hub: pip install huggingface_hub "
                          "(or pip install 'keras-swiftformer[hub]')") from err
    return huggingface_hub


def cache_folder(repo_id):
    """Where the hub's cache keeps `repo_id` (``$HF_HUB_CACHE/models--ORG--REPO``)."""
    from huggingface_hub import constants

    return os.path.join(constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"))


def pinned(path, uri):
    """`uri` with the commit of the cached snapshot `path` lies in (``hf://ORG/REPO@<commit>``)."""
    repo_id, _ = parse(uri)
    folder = os.path.dirname(path)
    if os.path.basename(os.path.dirname(folder)) != "snapshots":
        return uri
    return f"{PREFIX}{repo_id}@{os.path.basename(folder)}"


def fetch(uri, filenames, extras=("config.json",)):
    """The local path of the first of `filenames` that the repository of `uri` holds, fetched
    into (or found in) the hub's cache; `extras` that the repository has land beside it.

    Raises:
        HubError: a malformed address, an unknown repository or revision, a repository without
            any of `filenames`, or (offline / the hub unreachable) none of them in the cache.
        ImportError: huggingface_hub is not installed.
    """
    repo_id, revision = parse(uri)
    hub = _huggingface_hub()
    from huggingface_hub import constants
    from huggingface_hub.utils import (EntryNotFoundError, LocalEntryNotFoundError,
                                       RepositoryNotFoundError, RevisionNotFoundError)

    unreachable = None
    for name in filenames:
        try:
            path = hub.hf_hub_download(repo_id, name, revision=revision)
        except RevisionNotFoundError as err:
            raise HubError(f"{uri}: {repo_id} has no revision {revision!r}") from err
        except RepositoryNotFoundError as err:  # also gated and private repositories
            raise HubError(f"{uri}: no repository {repo_id} on the Hugging Face Hub (or it is "
                           "private or gated: log in with `hf auth login`)") from err
        except LocalEntryNotFoundError as err:  # offline or unreachable, and not cached
            unreachable = err
            continue
        except EntryNotFoundError:  # the repository does not have this file
            continue
        for extra in extras:
            try:
                hub.hf_hub_download(repo_id, extra, revision=revision)
            except (EntryNotFoundError, OSError):  # informational files only
                pass
        return path
    wanted = " or ".join(filenames)
    if unreachable is None:
        raise HubError(f"{uri} holds no SwiftFormer weights: the repository has no {wanted}")
    at = f"@{revision}" if revision else ""
    why = ("HF_HUB_OFFLINE=1" if constants.HF_HUB_OFFLINE
           else f"the hub could not be reached ({unreachable})")
    raise HubError(f"{uri}: {repo_id}{at} (its {wanted}) is not in the Hugging Face cache "
                   f"({cache_folder(repo_id)}) and {why}: download it once online, or point "
                   "HF_HUB_CACHE at a cache that has it")
