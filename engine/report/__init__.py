"""The contact sheet: after a run, one page to pick the epoch to keep.

For each LoRA file the run saved (epoch and step saves, then the final one), the run's sample
prompts (sampling.sample_prompts; without them, one prompt of the dataset's most frequent tags)
are rendered at LoRA strengths 0, 0.5 and 1.0 with each prompt's fixed seed, so the columns
compare: strength 0 is the base model, the same image in every row; 0.5 and 1.0 show what each
epoch learned. Beside them: the loss curve the loop read, and the run's settings.

    <run>/<name>-report.html   one self-contained file (images embedded), opens in any browser
    <run>/<name>-report.png    the grid alone

sheet.py decides what goes in and writes the files; render.py makes the images (the model loaded
again, the run's network built as training built it, each file's weights loaded into it); draw.py
draws the grid and the loss curve with PIL; page.py writes the HTML.
"""
