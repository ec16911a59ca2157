"""The model layer: what a user defines, with no I/O — context types, steps, sagas, nodes
(``Fallback``), retry policies, statuses and the error tree. Everything else imports it."""
