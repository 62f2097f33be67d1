"""What a Greengrass v1 core hands every Lambda it runs: environment settings and function-ARN helpers.

greengrasssdk (1.3.0 to 1.6.1) and the AWS ML SDK (1.0, 1.1) import these modules by absolute name, as they find
them inside a real core's Lambda container, so the names and signatures here follow what those SDKs read. Like
everything a Lambda process imports, this package runs on Python 2.7 and 3.7+.
"""
