package org.memlora.core;

/** One conversation turn: speaker, text and (LoCoMo) an optional caption of a shared photo. */
public final class Turn {
    public final String speaker;
    public final String text;
    public final String blipCaption;
    public final String diaId; // the turn's id, recorded as a memory's source turn (null: none)

    public Turn(String speaker, String text, String blipCaption, String diaId) {
        this.speaker = speaker;
        this.text = text;
        this.blipCaption = blipCaption;
        this.diaId = diaId;
    }
}
