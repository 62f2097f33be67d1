"""What a Greengrass v1 core hands every Lambda it runs: environment settings and function-ARN helpers.

greengrasssdk and the ML SDK import these modules by absolute name, as they would find them inside a real
core's Lambda container, so the names and signatures here follow what those SDKs expect.
"""
