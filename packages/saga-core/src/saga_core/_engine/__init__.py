"""The engine: runs one saga's steps and compensations and checkpoints them through the storage
protocol. It knows no concrete storage."""
