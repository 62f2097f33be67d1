"""The user Lambdas of a group version, as the core runs them: one `GroupFunction` per function definition entry.

The control plane (`connector.control`) resolves a group version's function definition against the stored Lambda
functions (qualified ARN → an immutable published version → its unpacked deployment package) and hands the runtime
these records; the runtime knows nothing of how they were stored. Field names follow the Greengrass API's
`FunctionConfiguration` where they mean the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

JSON, BINARY = "json", "binary"  # FunctionConfiguration.EncodingType
READ_ONLY, READ_WRITE = "ro", "rw"  # ResourceAccessPolicy.Permission


@dataclass(frozen=True)
class ResourceAccess:
    """A ResourceAccessPolicy, resolved: the group resource it names and where that resource lies on this machine."""

    resource_id: str
    path: Path
    permission: str = READ_ONLY


@dataclass(frozen=True)
class GroupFunction:
    """One entry of a function definition version, with the Lambda version it names resolved."""

    arn: str                     # as the definition names it, qualified: arn:aws:lambda:R:A:function:NAME:QUALIFIER
    version: str                 # the published version the qualifier resolves to ("3"; an alias is resolved)
    code_dir: Path               # that version's unpacked deployment package (read-only; never changes)
    runtime: str                 # python2.7, python3.7, python3.8, ...
    handler: str                 # module.function, inside code_dir
    pinned: bool = True          # long-lived (one process, started with the group) or on-demand
    memory_kb: Optional[int] = None    # MemorySize: RSS of the function's process tree
    timeout_s: Optional[float] = None  # Timeout: per invocation
    encoding: str = JSON
    variables: Dict[str, str] = field(default_factory=dict)  # Environment.Variables
    resource_access: List[ResourceAccess] = field(default_factory=list)
    access_sysfs: bool = False
    executable: Optional[str] = None   # FunctionConfiguration.Executable / ExecArgs (non-Python runtimes)
    exec_args: Optional[str] = None

    @property
    def name(self) -> str:
        return self.arn.split(":function:", 1)[-1].split(":", 1)[0]
