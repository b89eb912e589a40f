"""The HTTP front: the Quart app and its routes, the bare ``POST /publish`` route, the live
routes, access tokens, metrics and the OpenAPI document. Routes only: no SQL, no decoding."""
