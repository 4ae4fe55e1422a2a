"""AWS API definitions: OpenAPI 3.x / Swagger 2.0 with x-amazon-apigateway-* extensions.

    cfn.py       CloudFormation intrinsics (Fn::Sub, Ref, Fn::GetAtt, Fn::Join) from --param values
    refs.py      $ref resolution (local and relative files; circular models kept by name)
    reader.py    a document -> one native API entry (same model as the native format)
    source.py    config sources: an OpenAPI file served directly, or included by a native config
    export.py    the model -> OpenAPI with the extensions
    convert.py   Swagger 2.0 <-> OpenAPI 3.0 (export --format of an import in the other version)
    commands.py  `fastgw import`, `fastgw export` and the load flags of serve/validate/routes
"""
