"""Training for ``fit``: the reference loop, the stacked (``torch.func``) loop and what they share.

``fit`` (``training.fit``) checks its arguments and trains a configuration's seeds either
stacked (``stacked``, which hands each chunk of rows to ``chunk``) or one by one (``loop``, the
reference every stacked row reproduces). ``sources`` holds the data and the model a call trains;
``streams`` the per-row random generators; ``compat`` decides whether a model or a call can
stack; ``optim`` steps stacked parameters row by row; ``peers`` is how a stack trains other
items' (or sweep rows') configurations. Nothing here imports pytest: the pytest side of sharing
is ``pytest_hparams.sharing``.

No names are re-exported here, so that importing one submodule loads only what it needs.
"""
