"""kohya-compatible LoRA networks: which layers get a module and their kohya names (names), one
LoRA/LoCon module (modules), building, applying and (re)loading a whole network (inject), LoHa and
LoKr through LyCORIS (lycoris_adapter), block-wise settings (blocks), max-norm (max_norm), and the
files (lora_file). Importing the package imports nothing: its modules are imported where used."""
