"""The web demo's logic (``app.py`` at the repository root is the thin command line around it).

    shared_model    one loaded model shared by every decode of the app: forwards serialised FIFO, each with its
                    own decode's hybrid knobs; per-decode forward count (NFE), model time and last logits
    stepping        one decode streamed step by step (generate() in a worker thread, ``Step`` snapshots through a
                    queue), the confidence of the tokens revealed at each step, the settings and their validation,
                    the agreement of two canvases
    render          HTML of a canvas (masks, tokens revealed this step coloured by confidence, earlier tokens plain),
                    the step statistics, the agreement strip and error messages (pure functions)
    session         a chat turn: prompt from the history, one decode (or exact vs hybrid in compare mode), merged
                    into ``View`` states for the page
    ui              the Gradio page (imports gradio; everything above runs without it)
"""
