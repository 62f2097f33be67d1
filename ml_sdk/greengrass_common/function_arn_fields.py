"""Split a Lambda function ARN into its parts and put a qualified one back together.

greengrasssdk's Lambda client uses this to merge a qualifier given in the ARN with one given separately: 1.3.0
rebuilds the ARN from its fields (`build_arn_string`), 1.4.0 and later from the unqualified ARN
(`build_function_arn`). The pattern is wider than the cloud's: system functions have an empty region and account
(``arn:aws:lambda:::function:GGRouter``) and connector functions use the account ``aws``.
"""
import re

_FUNCTION_ARN = re.compile(
    r'arn:(?P<partition>aws(?:-[a-z]+)*)'
    r':lambda'
    r':(?P<region>(?:[a-z]{2}(?:-[a-z]+)+-\d+)?)'
    r':(?P<account_id>[0-9a-zA-Z]*)'
    r':function:(?P<name>[a-zA-Z0-9_-]+)'
    r'(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?'
    r'\Z'
)


class FunctionArnFields(object):
    """The fields of one function ARN; ``qualifier`` is None when the ARN has none."""

    def __init__(self, function_arn):
        try:
            match = _FUNCTION_ARN.match(function_arn)
        except TypeError:  # not text at all
            match = None
        if match is None:
            raise ValueError('Cannot parse given string as a function ARN.')
        self.partition = match.group('partition')
        self.region = match.group('region')
        self.account_id = match.group('account_id')
        self.name = match.group('name')
        self.qualifier = match.group('qualifier')
        # Everything before ':<qualifier>', so the caller's spelling of the rest is kept untouched.
        self.unqualified_arn = function_arn[:match.start('qualifier') - 1] if self.qualifier else function_arn

    @staticmethod
    def build_function_arn(unqualified_arn, qualifier=None):
        """Append the qualifier when there is one; '' counts as none, since greengrasssdk passes '' for "none"."""
        return '{}:{}'.format(unqualified_arn, qualifier) if qualifier else unqualified_arn

    @staticmethod
    def build_arn_string(region, account_id, name, qualifier=None, partition='aws'):
        """The ARN of these fields (greengrasssdk 1.3.0's way); region and account may be empty, as in system ARNs."""
        unqualified = 'arn:{}:lambda:{}:{}:function:{}'.format(partition, region or '', account_id or '', name)
        return FunctionArnFields.build_function_arn(unqualified, qualifier)

    def to_arn_string(self):
        return self.build_function_arn(self.unqualified_arn, self.qualifier)

    def __repr__(self):
        return 'FunctionArnFields({!r})'.format(self.to_arn_string())
