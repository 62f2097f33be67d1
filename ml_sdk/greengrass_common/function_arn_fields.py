"""Split a Lambda function ARN into its parts and put a qualified one back together.

greengrasssdk's Lambda client uses this to merge a qualifier given in the ARN with one given separately.  The
pattern is wider than the cloud's: system functions have an empty region and account
(``arn:aws:lambda:::function:GGRouter``) and connector functions use the account ``aws``.
"""
from __future__ import annotations

import re
from typing import Optional

_FUNCTION_ARN = re.compile(
    r'arn:(?P<partition>aws(?:-[a-z]+)*)'
    r':lambda'
    r':(?P<region>(?:[a-z]{2}(?:-[a-z]+)+-\d+)?)'
    r':(?P<account_id>[0-9a-zA-Z]*)'
    r':function:(?P<name>[a-zA-Z0-9_-]+)'
    r'(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?'
)


class FunctionArnFields:
    """The fields of one function ARN; ``qualifier`` is None when the ARN has none."""

    def __init__(self, function_arn: str) -> None:
        match = _FUNCTION_ARN.fullmatch(function_arn) if isinstance(function_arn, str) else None
        if match is None:
            raise ValueError('Cannot parse given string as a function ARN.')
        self.partition: str = match.group('partition')
        self.region: str = match.group('region')
        self.account_id: str = match.group('account_id')
        self.name: str = match.group('name')
        self.qualifier: Optional[str] = match.group('qualifier')
        # Everything before ':<qualifier>', so the caller's spelling of the rest is kept untouched.
        self.unqualified_arn: str = function_arn[:match.start('qualifier') - 1] if self.qualifier else function_arn

    @staticmethod
    def build_function_arn(unqualified_arn: str, qualifier: Optional[str] = None) -> str:
        """Append the qualifier when there is one; '' counts as none, since greengrasssdk passes '' for "none"."""
        return '{}:{}'.format(unqualified_arn, qualifier) if qualifier else unqualified_arn

    def to_arn_string(self) -> str:
        return self.build_function_arn(self.unqualified_arn, self.qualifier)

    def __repr__(self) -> str:
        return 'FunctionArnFields({!r})'.format(self.to_arn_string())
