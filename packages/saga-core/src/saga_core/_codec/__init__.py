"""The context codec (part of the model layer): a strict, lossless JSON encoding of a saga's
context, planned once per context type."""
