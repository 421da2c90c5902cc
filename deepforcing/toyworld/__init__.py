"""A small world whose truth is known: procedural bouncing shapes (:mod:`.world`), a fixed codec in place
of the VAE (:mod:`.codec`), a text conditioner for its vocabulary (:mod:`.text`), the rules that read
decoded frames back (:mod:`.rules`) and the training of the ``toy`` backbone (:mod:`.train`)."""
