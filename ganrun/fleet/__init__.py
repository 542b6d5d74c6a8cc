"""Fleets: many small runs trained in one process, their networks stacked along a
member axis (issue 21, in progress). The members' samples travel in the batch
dimension, member k's at rows k*B..(k+1)*B, so the models' own forward code runs
unchanged: only the layers with parameters are replaced by stacked ones
(ganrun.fleet.layers), built from the members' own standalone layers, so that each
member starts exactly where its standalone run would (ganrun.fleet.stack).

Why stacked parameters and batched matrix products rather than torch.func's
`vmap(functional_call)`: on 2 CPU threads at the DynGAN protocol's sizes (G and D
two 128-unit layers, batch 128, Adam), a generator step of 16 members takes 9.7 ms
stacked, 13.5 ms with vmap and 26 ms with per-member parameters stacked at each
forward (sequential: 41.6 ms); one member stacked costs what one plain model does
(2.4 ms against 2.5), with vmap 4.4 ms."""
