"""The model floor: what training, evaluation, label banks, bulk prediction and the service all need of
a model, and nothing else. open_clip's factory and tokenizers (`models`), exports in open_clip's layout
(`exports`), text towers as a registry (`text_towers`), the exact training speed-ups (`fastclip`,
`float8`), image preprocessing for training and evaluation (`preprocess`), prompt templates
(`templates`) and the towers run on a device (`towers`). It imports nothing above it: no Ray, no data
pipeline, no trainer, no service."""
